if client._sync_manager and client._sync_manager.backend.health_check():
    print("Sync backend healthy")
else:
    print("Sync backend unavailable")
