"""The Processing provider that exposes the plugin's algorithms (id ``gridsampling``)."""
