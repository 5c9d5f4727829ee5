"""Container images in kits: OCI image layouts read, checked, planned into a kit, and pushed to a registry.

``layout`` holds the formats (descriptors, manifests, indexes, the walk from a
root descriptor) on bytes; ``sources`` reads OCI layout directories,
oci-archive tarballs and ``docker save`` archives; ``plan`` turns a spec's
images into the kit's ``images/`` tree; ``check`` verifies that tree inside a
kit; ``reference`` maps kit references to push targets; ``registry`` is a small OCI distribution client.
"""
