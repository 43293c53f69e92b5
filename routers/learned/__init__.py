"""Building blocks shared by the learned routers: text embedders and the history encoder."""
