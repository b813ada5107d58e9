"""The ``hostward`` command line: thin commands over the manager's REST API and the agent."""
