"""MODE=txn-rpw for confluent-kafka: the read-process-write scenario of txn_mode.py."""
from txn_mode import RpwScenario as Scenario  # noqa: F401
