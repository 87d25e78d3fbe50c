export interface BuildContext {
  /** the working directory relative paths resolve against */
  cwd: string;
  warn(message: string): void;
}
