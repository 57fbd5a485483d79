"""Tables and plots derived from Results only. Never imports a method, a runtime or the bench's machinery."""
