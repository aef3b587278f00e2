"""The only writers: apply an action and return what it changed; restore exactly that."""
