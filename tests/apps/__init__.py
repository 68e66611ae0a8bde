"""The test applications mig's integration tests record on a primary and replay on a backup
(C sources, kv_asyncio.py, and client.py to drive them). A package so tests can import
``tests.apps.client``; the apps themselves know nothing of mig."""
