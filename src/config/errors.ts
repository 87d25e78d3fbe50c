/** A configuration problem that stops start-up. The message is one line, fit for printing as is. */
export class ConfigError extends Error {
  constructor(
    message: string,
    readonly section?: string,
    readonly key?: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }

  /** e.g. `config error: [http] clientapi.http.port = "80x": not a port number (1-65535)` */
  static forValue(section: string, key: string, value: string, problem: string): ConfigError {
    // JSON quoting keeps multi-line values on one line
    return new ConfigError(`config error: [${section}] ${key} = ${JSON.stringify(value)}: ${problem}`, section, key);
  }
}
