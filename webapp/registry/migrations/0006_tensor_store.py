import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('registry', '0005_gradient_sets'),
        ('teams', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='modelentry',
            name='storage',
            field=models.CharField(choices=[('folder', 'Folder'), ('compressed', 'Stored compressed')], default='folder', max_length=12),
        ),
        migrations.AddField(
            model_name='modelentry',
            name='store_manifest',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.CreateModel(
            name='StoredTensor',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(help_text='Content hash of the tensor (dtype, shape, bytes).', max_length=64)),
                ('logical_bytes', models.BigIntegerField(default=0)),
                ('stored_bytes', models.BigIntegerField(default=0)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='stored_tensors', to='teams.team')),
            ],
            options={
                'ordering': ['team', 'key'],
                'constraints': [models.UniqueConstraint(fields=('team', 'key'), name='storedtensor_unique_team_key')],
            },
        ),
        migrations.CreateModel(
            name='StoredTensorRef',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('model', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tensor_refs', to='registry.modelentry')),
                ('tensor', models.ForeignKey(on_delete=django.db.models.deletion.RESTRICT, related_name='refs', to='registry.storedtensor')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('tensor', 'model'), name='storedtensorref_unique_tensor_model')],
            },
        ),
    ]
