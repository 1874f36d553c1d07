"""Methods that ship with the checkout as plugins, added the way the README's "Adding your
method as a new column" adds one: each module registers its methods when imported. Name a
module under a config's `plugins` (`plugins: [plugins.td3]`); the workflow and its jobs find
this folder from the checkout, the directory they run in."""
