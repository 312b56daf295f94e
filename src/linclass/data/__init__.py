"""CIFAR-10 in: download (http, https, file), the official python layout, uint8 pixels with their mean image."""
