"""The street layer: people, vehicles and screens in a frame, and the plates on vehicles."""
