//! Command-line behaviour: formats, stdin, exit codes, several files.
