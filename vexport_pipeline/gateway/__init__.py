"""`vexport serve`: the download gateway, a Starlette app over the delivery core (links, access rules,
the event store). Stateless apart from the event store, so several can run behind a load balancer."""
