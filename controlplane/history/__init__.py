"""Configuration history, diff and rollback.

Every snapshot version the controller publishes is recorded (what triggered it, which xDS
resources changed, how the fleet took it), resource bytes are kept content-addressed so N
versions cost little more than one, the history is persisted (ConfigMaps or a state dir) and
a pin can put every replica's served configuration back on an earlier version.
"""
