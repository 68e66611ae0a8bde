"""What crosses Kafka (mig/wire/): the codec, schema evolution, signatures."""
