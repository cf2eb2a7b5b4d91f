"""Budgets and allowances: daily refresh budgets, ticket budgets, per-requester limits."""
