/**
 * The operator's page at /_sydent/debug/: every machine drawn as a statechart with live counts per state, and
 * the actor, session, callback and replication tables, refreshing by itself. Everything it loads comes from this
 * listener (the Mermaid renderer is served from the installed package): no outside network.
 */
export const DEBUG_PAGE = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sydent-ts: live state</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #f7f8fa; }
  h1 { font-size: 1.3rem; margin: 0 0 1rem; }
  h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
  section.machines { display: flex; flex-direction: column; gap: 1rem; }
  figure { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: .75rem; margin: 0; overflow-x: auto; }
  figure svg { min-width: 60rem; height: auto; }
  figcaption { font-weight: 600; margin-bottom: .5rem; }
  table { border-collapse: collapse; background: #fff; min-width: 20rem; }
  th, td { border: 1px solid #dde1e8; padding: .25rem .6rem; text-align: left; }
  th { background: #eef1f5; }
  #status { color: #666; font-size: .85rem; }
  .error { color: #a4262c; }
</style>
</head>
<body>
<h1>sydent-ts <span id="status">loading…</span></h1>
<h2>Machines</h2>
<section class="machines" id="machines"></section>
<h2>Actors</h2>
<table id="actors"><thead><tr><th>actor</th><th>status</th><th>queue</th><th>running</th><th>handled</th><th>failed</th><th>actors below</th></tr></thead><tbody></tbody></table>
<h2>Sessions by state</h2>
<table id="sessions"><thead><tr><th>state</th><th>sessions</th></tr></thead><tbody></tbody></table>
<h2>Homeserver callbacks</h2>
<table id="callbacks"><thead><tr><th>id</th><th>destination</th><th>state</th><th>attempts</th><th>next attempt</th><th>last error</th></tr></thead><tbody></tbody></table>
<h2>Replication peers</h2>
<table id="peers"><thead><tr><th>peer</th><th>state</th><th>cursor</th><th>backlog</th><th>last error</th><th>next retry</th></tr></thead><tbody></tbody></table>
<script src="assets/mermaid.min.js"></script>
<script>
  const token = new URLSearchParams(location.search).get('access_token');
  const headers = token ? { authorization: 'Bearer ' + token } : {};
  const get = async (path) => {
    const res = await fetch(path, { headers });
    if (!res.ok) throw new Error(path + ': ' + res.status);
    return res.json();
  };
  const cell = (v) => { const td = document.createElement('td'); td.textContent = v === null || v === undefined ? '' : String(v); return td; };
  const fill = (id, rows) => {
    const body = document.querySelector('#' + id + ' tbody');
    body.replaceChildren(...rows.map((r) => { const tr = document.createElement('tr'); tr.append(...r.map(cell)); return tr; }));
  };
  const when = (ms) => (ms ? new Date(ms).toISOString() : '');
  mermaid.initialize({ startOnLoad: false, securityLevel: 'strict', theme: 'neutral' });
  const drawn = {};
  async function drawMachines() {
    const { machines } = await get('machines');
    const host = document.getElementById('machines');
    for (const m of machines) {
      // Each state is labelled with its live count.
      const [head, ...rest] = m.mermaid.split('\\n');
      const labels = m.states.map((s) => '  state "' + s + ' (' + (m.counts[s] || 0) + ')" as ' + s);
      const text = [head, ...labels, ...rest].join('\\n');
      if (drawn[m.name] === text) continue;
      drawn[m.name] = text;
      let fig = document.getElementById('machine-' + m.name);
      if (!fig) {
        fig = document.createElement('figure');
        fig.id = 'machine-' + m.name;
        fig.innerHTML = '<figcaption></figcaption><div class="diagram"></div>';
        fig.querySelector('figcaption').textContent = m.name;
        host.append(fig);
      }
      const { svg } = await mermaid.render('svg-' + m.name + '-' + Date.now(), text);
      fig.querySelector('.diagram').innerHTML = svg;
      fig.dataset.counts = JSON.stringify(m.counts);
    }
  }
  async function refresh() {
    try {
      const [actors, sessions, callbacks] = await Promise.all([get('actors'), get('sessions'), get('callbacks')]);
      const below = (children) => {
        const byState = {};
        for (const c of children) byState[c.state] = (byState[c.state] || 0) + 1;
        return Object.entries(byState).map(([s, n]) => n + ' ' + s).join(', ');
      };
      fill('actors', actors.actors.map((a) => [a.systemId, a.status, a.queueLength, a.running, a.handled, a.failed, below(a.children)]));
      fill('sessions', Object.entries(sessions.byState));
      fill('callbacks', callbacks.rows.map((c) => [c.id, c.destination, c.state, c.attempts, when(c.nextAttemptTs), c.lastError]));
      const peers = await get('replication').catch(() => ({ peers: [] }));
      fill('peers', peers.peers.map((p) => [p.name, p.state, p.cursor, p.backlog, p.lastError, when(p.nextRetryTs)]));
      await drawMachines();
      const status = document.getElementById('status');
      status.textContent = 'updated ' + new Date().toLocaleTimeString();
      status.className = '';
    } catch (e) {
      const status = document.getElementById('status');
      status.textContent = String(e);
      status.className = 'error';
    }
  }
  refresh();
  setInterval(refresh, 2000);
</script>
</body>
</html>
`;
