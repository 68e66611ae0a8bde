"""Apache Kafka brokers that mig runs itself: the embedded single node and test clusters."""

from mig.broker.embedded import BrokerStatus, EmbeddedBroker
from mig.broker.jars import KAFKA_VERSION, ensure_jars
from mig.broker.secure import SaslListener

__all__ = ["BrokerStatus", "EmbeddedBroker", "KAFKA_VERSION", "SaslListener", "ensure_jars"]
