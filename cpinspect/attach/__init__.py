"""Finding target processes and their agent's socket; later, injecting the agent."""
