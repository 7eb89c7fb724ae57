"""equiv-bench inside other projects' test suites: the pytest plugin (entry point ``pytest11``). May import jobs
and below; imports nothing heavy until a fixture is used."""
