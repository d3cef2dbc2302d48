"""zoo's conformance suite over everything this plugin registers."""

import zoo.testing


def test_plugin_conforms():
    zoo.testing.check_plugin("zoo-example")
