"""Stand-ins for the services that cannot run here (OpenAI Realtime, Stream Video), shared by tests and bench."""
