"""The benchmark: the real daemon against a Tansu broker and the stand-in API (`python -m bench.run`)."""
