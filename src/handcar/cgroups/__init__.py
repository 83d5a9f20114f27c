"""handcar's cgroup manager, for v1, hybrid and unified (v2) hosts.

The calls the runtime makes, in order, for a container:

    manager = handcar.cgroups.manager.open_manager(spec_cgroups_path, container_id, systemd=..., rootless=...)
    manager.create()                      # mkdir on every hierarchy
    manager.apply(resources, devices=True)  # limits + device policy, before the init joins
    manager.add_pid(init_pid)             # while the child sets itself up (slow first time)
    save manager.state() in the container's state
    ...
    manager = from_paths(state["paths"], state["created"])  # in a later handcar process
    manager.kill_all(signal.SIGKILL); manager.wait_empty(); manager.destroy()

This package's __init__ imports nothing: callers import the module they need
(manager, update, fs), so limits, stats, OOM watching and update parsing load on use.
"""
