"""The maths: f(x, W) = Wx + b, its losses and penalties, minibatch SGD, metrics."""
