"""CDI (Container Device Interface): spec files, device names, the registry, edits.

Layers, each importing only those before it:
  names    - qualified device names and the cdi.k8s.io/ annotation form (pure)
  document - bytes -> JSON/YAML document, bounded (size, depth, no YAML aliases) (pure)
  spec     - document -> validated Spec with its devices and edits, version rules (pure)
  registry - spec directories -> devices by name, reloaded when a file changes (reads files)
  inject   - requested names + a ContainerSpec -> the edited ContainerSpec (stats host nodes)
"""
