"""The standard trainers: specs in `specs`, the shared loop in `zoo.trainers.engine`."""
