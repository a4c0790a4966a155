"""Have pytest rewrite the asserts of the deploy tests' helper modules as it does the tests' own."""

import pytest

pytest.register_assert_rewrite("deploy_render", "deploy_schemas", "exported", "promql_reads")
