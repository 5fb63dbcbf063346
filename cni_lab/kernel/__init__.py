"""The only side effects: namespaces, netlink, sysctls, processes. Nothing else imports pyroute2."""
