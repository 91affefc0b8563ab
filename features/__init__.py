"""Event schema, rolling-window maths, the feature registry and the feature stores."""
