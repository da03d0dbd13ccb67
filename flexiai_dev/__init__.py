"""flexiai's development tools: the fleet harness and the demo, the local Lambda invoke,
the CloudFormation reader it uses, and the one launcher of Redis/Valkey servers for the
tests, the benchmarks and the demo.

A package of its own, beside ``flexiai`` rather than inside it: ``import flexiai`` can never
reach it, so the library a service imports carries no process launcher, no signal handling
and no tooling dependencies. It ships in the same distribution so that the ``flexiai demo``
and ``flexiai invoke`` commands work from an installed wheel (with the ``demo`` extra).
Nothing in ``flexiai`` imports it, except the command dispatcher, lazily.
"""
