/**
 * The operator's page at /_sydent/debug/, in the order an operator reads it: a summary first (who this is, and the
 * numbers that say whether it is well), then the tables, then every machine drawn at one scale with its live
 * counts. It refreshes by itself. Everything it loads comes from this listener (the Mermaid renderer is served
 * from the installed package): no outside network. It builds its DOM with textContent only, so nothing the
 * server reports (an error message, a peer's name) can become markup.
 */
export const DEBUG_PAGE = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sydent-ts: live state</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
  :root { --line: #dde1e8; --muted: #5b6473; --live: #ffe9a8; --live-line: #b7791f; --bad: #a4262c; }
  body { font: 14px/1.45 system-ui, sans-serif; margin: 1.25rem 1.5rem 3rem; color: #1d2330; background: #f7f8fa; }
  header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .25rem 1.25rem; margin-bottom: 1rem; }
  h1 { font-size: 1.35rem; margin: 0; }
  h1 span { font-weight: 500; color: var(--muted); }
  header dl { display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; margin: 0; }
  header dt { display: inline; color: var(--muted); }
  header dd { display: inline; margin: 0 0 0 .3rem; font-weight: 600; }
  #status { color: var(--muted); font-size: .85rem; }
  #status.error { color: var(--bad); font-weight: 600; }
  h2 { font-size: 1.05rem; margin: 1.75rem 0 .5rem; }
  h3 { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 0 0 .35rem; }
  #summary { display: grid; grid-template-columns: repeat(auto-fit, minmax(15rem, 1fr)); gap: .75rem; }
  #summary article { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .7rem .9rem; }
  .big { font-size: 1.6rem; font-weight: 650; margin: 0; line-height: 1.2; }
  .big small { font-size: .85rem; font-weight: 400; color: var(--muted); }
  #summary ul { list-style: none; margin: .4rem 0 0; padding: 0; }
  #summary li { display: flex; justify-content: space-between; gap: 1rem; padding: .05rem 0; }
  #summary li b { font-variant-numeric: tabular-nums; }
  .live { background: var(--live); border-radius: 3px; padding: 0 .3rem; }
  .why { color: var(--muted); }
  .bad { color: var(--bad); }
  .tables { display: grid; grid-template-columns: repeat(auto-fit, minmax(26rem, 1fr)); gap: 0 1.5rem; align-items: start; }
  table { border-collapse: collapse; background: #fff; width: 100%; }
  th, td { border: 1px solid var(--line); padding: .25rem .6rem; text-align: left; vertical-align: top; }
  th { background: #eef1f5; font-weight: 600; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; }
  tr.live td { background: var(--live); }
  p.empty { background: #fff; border: 1px dashed var(--line); border-radius: 6px; padding: .6rem .8rem; margin: 0; color: var(--muted); }
  p.legend { color: var(--muted); margin: 0 0 .75rem; }
  #machines { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
  figure { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .75rem; margin: 0; max-width: 100%; overflow-x: auto; box-sizing: border-box; }
  figcaption { font-weight: 600; margin-bottom: .5rem; }
  /* Every diagram at its own natural size: one scale for all, never stretched to the page. */
  figure svg { display: block; max-width: none; height: auto; }
</style>
</head>
<body>
<header>
  <h1>sydent-ts <span data-k="server-name">…</span></h1>
  <dl>
    <div><dt>version</dt><dd data-k="version">…</dd></div>
    <div><dt>node</dt><dd data-k="node">…</dd></div>
    <div><dt>up</dt><dd data-k="uptime">…</dd></div>
  </dl>
  <span id="status">loading…</span>
</header>

<section id="summary" aria-label="Summary">
  <article id="summary-sessions"><h3>Sessions</h3><p class="big"><span data-k="sessions-total">…</span> <small>in the database</small></p><ul></ul></article>
  <article id="summary-actors"><h3>Actors and their queues</h3><ul></ul></article>
  <article id="summary-callbacks"><h3>Homeserver callbacks</h3><p class="big"><span data-k="callbacks-pending">…</span> <small>pending</small></p><ul></ul></article>
  <article id="summary-replication"><h3>Replication</h3><p data-k="replication-status">…</p><ul></ul></article>
</section>

<section id="tables" aria-label="Tables" class="tables">
  <div><h2>Actors</h2><div id="actors"></div></div>
  <div><h2>Sessions by state</h2><div id="sessions"></div></div>
  <div><h2>Homeserver callbacks</h2><div id="callbacks"></div></div>
  <div><h2>Replication peers</h2><div id="peers"></div></div>
</section>

<section aria-label="State machines">
  <h2>State machines</h2>
  <p class="legend">Each state shows how many are in it now; highlighted states hold at least one. An arrow leaving a box
  applies to every state inside it; ↻ marks a transition back to the same state.</p>
  <div id="machines"></div>
</section>

<script src="assets/mermaid.min.js"></script>
<script>
  const token = new URLSearchParams(location.search).get('access_token');
  const headers = token ? { authorization: 'Bearer ' + token } : {};
  const get = async (path) => {
    const res = await fetch(path, { headers });
    if (!res.ok) throw new Error(path + ': ' + res.status);
    return res.json();
  };
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v; else e.setAttribute(k, v);
    }
    for (const kid of kids) e.append(kid === null || kid === undefined ? '' : typeof kid === 'object' ? kid : String(kid));
    return e;
  };
  const set = (key, value) => { for (const e of document.querySelectorAll('[data-k="' + key + '"]')) e.textContent = String(value); };
  const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '');
  const since = (s) => {
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return d + ' d ' + h + ' h';
    if (h) return h + ' h ' + m + ' min';
    if (m) return m + ' min ' + (s % 60) + ' s';
    return s + ' s';
  };
  const counted = (byState) => Object.entries(byState).filter(([, n]) => n > 0).map(([s, n]) => n + ' ' + s).join(', ');
  const item = (label, value, key, live) => el('li', {}, el('span', { class: live ? 'live' : null }, label), el('b', { 'data-k': key }, value));
  // A table, or a sentence saying why there is nothing to show.
  const table = (id, head, rows, empty) => {
    const host = document.getElementById(id);
    if (rows.length === 0) { host.replaceChildren(el('p', { class: 'empty' }, empty)); return; }
    const thead = el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h))));
    const tbody = el('tbody', {}, ...rows.map((r) => el('tr', { class: r.live ? 'live' : null, 'data-row': r.key },
      ...r.cells.map((c) => el('td', { class: typeof c === 'number' ? 'n' : null }, c)))));
    host.replaceChildren(el('table', {}, thead, tbody));
  };

  function showSummary(s, sessionStates) {
    document.title = 'sydent-ts ' + s.server.name + ': live state';
    set('server-name', s.server.name);
    set('version', s.server.version);
    set('node', s.server.node.hostname + ' (pid ' + s.server.node.pid + ', Node.js ' + s.server.node.nodeVersion + ')');
    set('uptime', since(s.server.uptimeSeconds));

    set('sessions-total', s.sessions.total);
    const inState = sessionStates.filter((st) => s.sessions.byState[st] > 0);
    document.querySelector('#summary-sessions ul').replaceChildren(...(inState.length
      ? inState.map((st) => item(st, s.sessions.byState[st], 'sessions-' + st, true))
      : [el('li', { class: 'why' }, 'none yet')]));

    document.querySelector('#summary-actors ul').replaceChildren(...s.actors.filter((a) => a.systemId !== 'root').map((a) =>
      item(a.systemId + (a.status === 'active' ? '' : ' (' + a.status + ')'), a.queueLength + ' queued, ' + a.running + ' running',
        'actor-' + a.systemId + '-queue', a.queueLength > 0)));

    set('callbacks-pending', s.callbacks.pending);
    document.querySelector('#summary-callbacks ul').replaceChildren(
      ...['delivering', 'retrying', 'delivered', 'abandoned'].map((st) => item(st, s.callbacks.counts[st] || 0, 'callbacks-' + st, (s.callbacks.counts[st] || 0) > 0 && st !== 'delivered')));

    const r = s.replication;
    set('replication-status', !r.enabled ? 'off: ' + r.reason : r.peers.length ? 'on, ' + r.peers.length + ' peer(s)' : 'on, no peers configured');
    document.querySelector('[data-k="replication-status"]').className = r.enabled ? '' : 'why';
    document.querySelector('#summary-replication ul').replaceChildren(...r.peers.map((p) =>
      item(p.name + ': ' + p.state, p.backlog + ' behind', 'peer-' + p.name, p.state === 'backingOff' || p.backlog > 0)));
  }

  function showTables(s, sessionStates, outbox, replication) {
    table('actors', ['actor', 'status', 'queued', 'running', 'handled', 'failed', 'actors below'],
      s.actors.map((a) => ({ key: a.systemId, cells: [a.systemId, a.status, a.queueLength, a.running, a.handled, a.failed, counted(a.children.byState)] })),
      'No actors are running.');
    table('sessions', ['state', 'sessions'],
      sessionStates.filter((st) => s.sessions.byState[st] > 0).map((st) => ({ key: st, live: true, cells: [st, s.sessions.byState[st]] })),
      'No validation sessions in the database yet: none has been requested, or all have been purged.');
    table('callbacks', ['id', 'destination', 'state', 'attempts', 'next attempt', 'last error'],
      outbox.rows.map((c) => ({ key: String(c.id), live: c.state !== 'delivered' && c.state !== 'abandoned',
        cells: [c.id, c.destination, c.state, c.attempts, when(c.nextAttemptTs), c.lastError || ''] })),
      'No homeserver callbacks recorded: nothing bound through a homeserver has needed one.');
    table('peers', ['peer', 'state', 'cursor', 'backlog', 'failures', 'last error', 'next retry'],
      replication.peers.map((p) => ({ key: p.name, live: p.state === 'pushing' || p.state === 'backingOff',
        cells: [p.name, p.state, p.cursor, p.backlog, p.failures, p.lastError || '', when(p.nextRetryTs)] })),
      replication.enabled ? 'Replication is on, but no peers are configured (sydent-ts peers add).' : 'Replication is off: ' + replication.reason + '.');
  }

  mermaid.initialize({
    startOnLoad: false, securityLevel: 'strict', theme: 'neutral',
    // SVG text, measured as drawn, and every diagram at its natural size.
    htmlLabels: false, flowchart: { htmlLabels: false, useMaxWidth: false },
  });
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 0.5 && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 0.5;
  // Mermaid puts the label of an arrow that crosses a box's edge at the arrow's middle, where another label may
  // already be: such labels are moved up or down, a little at a time, until no label covers another or a state.
  function separateLabels(svg) {
    const fixed = [...svg.querySelectorAll('g.node, g.cluster-label')];
    const labels = [...svg.querySelectorAll('g.edgeLabel')].filter((e) => e.textContent.trim());
    for (let round = 0; round < 50; round++) {
      let moved = false;
      for (const [i, label] of labels.entries()) {
        const box = label.getBoundingClientRect();
        const other = [...fixed, ...labels.slice(0, i)].map((e) => e.getBoundingClientRect()).find((b) => overlap(box, b));
        if (!other) continue;
        const down = box.top + box.bottom >= other.top + other.bottom;
        const dy = down ? other.bottom - box.top + 3 : other.top - box.bottom - 3;
        label.setAttribute('transform', (label.getAttribute('transform') || '') + ' translate(0, ' + dy + ')');
        moved = true;
      }
      if (!moved) return;
    }
  }
  const drawn = {};
  let renders = 0;
  async function drawMachines(machines) {
    const host = document.getElementById('machines');
    for (const m of machines) {
      let fig = document.getElementById('machine-' + m.name);
      if (!fig) {
        fig = el('figure', { id: 'machine-' + m.name }, el('figcaption', {}, m.name), el('div', { class: 'diagram' }));
        host.append(fig);
      }
      fig.dataset.counts = JSON.stringify(m.counts);
      if (drawn[m.name] === m.mermaid) continue;
      const { svg } = await mermaid.render('svg-' + m.name + '-' + ++renders, m.mermaid);
      fig.querySelector('.diagram').innerHTML = svg;
      separateLabels(fig.querySelector('svg'));
      drawn[m.name] = m.mermaid;
      fig.dataset.drawn = JSON.stringify(m.counts);
    }
  }

  async function refresh() {
    const status = document.getElementById('status');
    try {
      const [summary, outbox, replication, machines] = await Promise.all([
        get('summary'), get('callbacks?limit=50'), get('replication'), get('machines'),
      ]);
      const sessionStates = machines.machines.find((m) => m.name === 'validation-session').states;
      showSummary(summary, sessionStates);
      showTables(summary, sessionStates, outbox, replication);
      await drawMachines(machines.machines);
      status.textContent = 'updated ' + new Date().toLocaleTimeString();
      status.className = '';
    } catch (e) {
      status.textContent = String(e);
      status.className = 'error';
    }
  }
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try { await refresh(); } finally { busy = false; }
  };
  tick();
  setInterval(tick, 2000);
</script>
</body>
</html>
`;
