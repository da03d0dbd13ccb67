# Check if sync is enabled
print(client._sync_manager)  # Should not be None

# Check backend health
print(client._sync_manager.backend.health_check())  # Should be True

# Check worker ID
print(client._sync_manager.worker_id)  # Each worker should have unique ID
