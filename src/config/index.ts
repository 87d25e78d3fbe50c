export { configFilePath, generateConfig, loadConfig, type LoadConfigOptions, type LoadedConfig } from './load.js';
export { ConfigError } from './errors.js';
export { DEFAULT_IP_RANGE_BLACKLIST, type Env } from './defaults.js';
export type * from './types.js';
