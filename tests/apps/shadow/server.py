"""An app module named like one of the agent's: injection must not shadow it."""

WHO = "app server module"
