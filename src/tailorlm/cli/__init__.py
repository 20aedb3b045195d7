"""The `tailor` command line: a thin table from command to library function."""
