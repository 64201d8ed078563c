"""The etcd connection options of the collection's modules (etcd_key, flannel_lease).

One owner for their documentation; the argument spec they share is
plugins/module_utils/etcd_options.py (the table the agent and flannelctl use too).
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  endpoints:
    description:
      - etcd client URLs (C(http://) or C(https://)), tried in order; the next one is used
        when an endpoint cannot be reached within O(timeout), fails the TLS handshake or
        answers with a server error.
    type: list
    elements: str
    required: true
  ca_cert:
    description:
      - CA certificate (PEM) that signed the etcd server certificates, for https endpoints.
      - Without it the system's trusted CAs are used.
    type: path
  client_cert:
    description:
      - Client certificate (PEM) for etcd's client certificate authentication
        (etcd's C(--client-cert-auth)), issued by a CA in etcd's C(--trusted-ca-file).
      - Required together with O(client_key).
    type: path
  client_key:
    description:
      - Unencrypted private key (PEM) of O(client_cert).
      - Required together with O(client_cert).
    type: path
  username:
    description:
      - etcd user name for etcd's authentication; needs O(password).
    type: str
  password:
    description:
      - Password of O(username).
    type: str
  timeout:
    description:
      - Seconds to wait for each request on one endpoint before trying the next one.
    type: float
    default: 5
notes:
  - When TLS to etcd fails, the task fails with one line saying which side refused what and
    what to do (for example an expired client certificate, a client certificate from another
    CA, a server certificate without this endpoint's name, or C(http://) to a TLS port).
"""
