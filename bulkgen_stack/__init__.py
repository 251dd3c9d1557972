"""Process management: the `bulkgen` command and the supervisor of one machine's processes.

`cli` parses the command, `up` starts everything on this machine, `check` runs a smoke check,
`processes` starts, restarts and stops child processes (the tests drive it too), `accounts` makes
the first admin and the local worker token, `workercheck` is a worker host's health check. It may
import `app` and `tasks`; nothing in them imports it.
"""
