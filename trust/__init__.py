"""trust: who a Box is and whom it trusts, for the daemon, `boxctl`, the OTA client and the cloud.

| module | what |
|---|---|
| `tls` | the one function of each kind that builds TLS contexts (verification always on), `explain` |
| `identity` | the identity files (key 0600, certificate chain, platform CA; staged, switched, recovered) |
| `crl` | the platform's revocation list: checked (in a child process), kept, used |
| `https` | HTTPS on requests through one TLS context only (a transport adapter), sockets an abort shuts |
| `enroll` | enrollment, renewal and its confirmation (key and CSR on the Box, HTTPS to the platform) |
| `renewal` | renewal as the daemon runs it: `python -m trust.enroll` in a process of its own |
| `errors` | `IdentityError`, `EnrollError`, `CrlError` |

Imports `proto` (the name patterns) and `boxkit` (atomic files), nothing else of the project.
`requests` and `cryptography` are imported only by `https` and `enroll` (and `crl.verify`), which
the resident daemon never imports.
"""
