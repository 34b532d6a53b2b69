"""The block-storage host: volumes as files, reached by compute hosts over NBD.

:mod:`.base` is the Protocol every backend implements; :mod:`.qsd` is the one
this project runs (``qemu-storage-daemon``, driven through :mod:`.qmp`);
:mod:`.host` runs it as a worker on the queue ``storage.<name>``, whose tasks
(:mod:`.tasks`) answer the calls of :mod:`.client`.
"""
