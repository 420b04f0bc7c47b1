"""Public machines as Asset Administration Shells (AAS metamodel 3.0, through the Eclipse BaSyx
Python SDK): ``builder`` turns a capacity record (as the API serves it and the feed publishes it)
into a shell and its three submodels; ``api`` serves them at the AAS HTTP API (Part 2) paths, for
the plant collector and the exchange alike. docs/CAPACITY.md, "Asset Administration Shells"."""
