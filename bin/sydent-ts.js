#!/usr/bin/env node
// The installed command: runs the compiled server in the current working directory.
import '../dist/main.js';
