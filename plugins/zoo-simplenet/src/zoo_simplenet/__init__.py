"""SimpleNet: a configurable MLP classifier, registered with zoo as type ``simplenet``."""
