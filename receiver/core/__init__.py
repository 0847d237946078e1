"""The core: what adapters (handlers/) and the service share, importing nothing of either.

Events, the error tree, parsers of outside input, signing, HTTP and concurrency helpers live
here (ARCHITECTURE.md). Nothing in this package imports `receiver.*` outside `receiver.core`,
nor `handlers`; import-linter checks it in CI.
"""
