"""Corpus readers, one module per input family (JSON, tables, text/Markdown, files and folders), sharing the
error, document and report types of `readers.base`. `mbert_retrieval.data` is the public entry point."""
