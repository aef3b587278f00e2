"""kopf handlers: thin glue from events and timers to the pure core and the actuators."""
