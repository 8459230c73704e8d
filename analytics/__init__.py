"""Mobile-app analytics jobs (DESIGN §6); built out in its own issue."""
