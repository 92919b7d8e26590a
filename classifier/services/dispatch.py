"""The classifier's task names. They are sent by name (catalog.queues.task_send), so web processes never
import the tasks (or TensorFlow); the tasks themselves live in classifier.tasks.
"""

CLASSIFY_PRODUCTS = "classifier.tasks.classify_products"
CLASSIFY_PRODUCTS_CHUNK = "classifier.tasks.classify_products_chunk"
TRAIN_MODEL = "classifier.tasks.train_model"
