"""The only side effects: namespaces, netlink, sysctls, processes. Nothing else imports pyroute2.

pyroute2 takes ~0.1 s to import, a third of a 100-pod `up`: `rtnl` (writing) is imported where a
step needs it and `IPRoute` (reading) where a view is read, so `check`, `status` and `down`
never load it (bench/ measures whole commands).
"""
