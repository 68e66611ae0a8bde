"""mig's Kafka (mig/kafka/): topics, TLS and SASL."""
