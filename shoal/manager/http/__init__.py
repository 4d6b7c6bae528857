"""The manager's HTTP API, split by who calls it: users (`user_routes`), node agents
(`agent_routes`), joining nodes (`join_routes`); one authorisation module (`authz`)."""
