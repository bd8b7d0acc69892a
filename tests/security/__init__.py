"""Issue 20: what an attacker, a careless upload or a busy viewer could do, each refused."""
