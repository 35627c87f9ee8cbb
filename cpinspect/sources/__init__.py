"""Where data comes from: the live agent, py-spy, a saved file. One interface, one model."""
