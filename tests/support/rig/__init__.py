"""One test rig for tests/pipeline, tests/chaos, bench/ and the soak (bench/soak.py).

It lives under tests/support (not as a top-level package) because it is test infrastructure:
it builds on tests.support's throwaway databases, broker namespaces and private servers, stays
out of the installed package and the image (pyproject installs only shared* and services*),
and bench/ already imports tests.support.

- `processes`: start the real services (`python -m services.<name>`), stop them by pid;
- `env`: the services' settings under the rig (short leases and retries);
- `stub`: the provider stub in a thread or as a process, and its control API;
- `data`: seed clients in bulk, mailing bodies, a mailing's counts and row;
- `core`: `RigBase`, the methods a pipeline test and a chaos scenario share;
- `verify`: the invariants every mailing holds to after a fault.
"""
